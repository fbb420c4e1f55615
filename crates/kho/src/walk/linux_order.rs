//! [`Walk`]: the blocks of a tree in Linux walk order, each run checked
//! against the blocks of the other orders.

use core::fmt;

use crate::addr::{Block, Order, PhysAddr, PhysRange};
use crate::mem::PageMap;
use crate::walk::engine::{OrderRuns, OrderScan, Visit};
use crate::walk::{
    BlockRun, ORDERS, OrderCounts, OrderSet, RadixReader, RunBlocks, VisitedSet, WalkError,
};

/// An overlap checker of the walk: re-scans one higher order in step with
/// the current order's runs.
#[derive(Clone, Copy)]
struct Checker<'m> {
    scan: OrderScan<'m>,
    /// The checker's current run, inclusive: (start, last).
    run: Option<(u64, u64)>,
}

/// The blocks of a tree in Linux walk order: ascending key, so higher
/// orders first and ascending addresses within an order.
///
/// Iterate blocks (`Iterator<Item = Result<Block, WalkError>>`) or, faster,
/// runs of consecutive blocks of one order ([`Walk::next_run`]). Each run is
/// checked against RAM and the forbidden ranges, and against the blocks of
/// every higher order present (one checker per higher order, re-scanning
/// it forward only: linear per pair of orders).
pub struct Walk<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> {
    reader: RadixReader<'m, 'r, M, V>,
    /// Orders not started yet.
    remaining: OrderSet,
    /// The order being walked.
    runs: Option<OrderRuns<'m, 'r>>,
    checkers: [Checker<'m>; ORDERS],
    pending: RunBlocks,
    counts: OrderCounts,
    failed: bool,
    /// Salvage: a second damage to report (an overlap's other leaf).
    damage: Option<super::Damage>,
}

impl<M: PageMap + ?Sized, V: VisitedSet> fmt::Debug for Walk<'_, '_, M, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walk")
            .field("reader", &self.reader)
            .field("order", &self.runs.map(|r| r.order()))
            .field("counts", &self.counts)
            .finish()
    }
}

impl<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> Walk<'m, 'r, M, V> {
    /// The reader (the salvage walk reads its machine and sets its mode).
    pub(crate) fn reader_mut(&mut self) -> &mut RadixReader<'m, 'r, M, V> {
        &mut self.reader
    }

    /// **Ours**: the next run, or the [`super::Damage`] of a subtree or a
    /// leaf that breaks an invariant, in walk order; the walk goes on past
    /// a damaged node and ends at an error that leaves nothing trusted
    /// (see [`super::SalvageWalk`]). Call only with the reader in salvage
    /// mode.
    pub(crate) fn next_salvaged(&mut self) -> Option<super::Salvaged> {
        use super::salvage::{Damage, Salvaged, ends_walk};
        if self.failed {
            return None;
        }
        if let Some(d) = self.damage.take() {
            return Some(Salvaged::Damage(d));
        }
        loop {
            if let Some(runs) = &mut self.runs {
                let order = runs.order();
                let ram = self.reader.ram();
                match runs.next_run(&mut self.reader) {
                    Err(e) if ends_walk(&e) => {
                        self.failed = true;
                        self.runs = None;
                        return Some(Salvaged::Damage(Damage::whole_ram(
                            ram,
                            self.reader.root(),
                            e,
                        )));
                    }
                    Err(
                        e @ (WalkError::BlockOutsideRam { .. } | WalkError::BlockForbidden { .. }),
                    ) => {
                        let fault = runs.scan_mut().leaf_fault();
                        runs.scan_mut().abandon_leaf();
                        return Some(Salvaged::Damage(Damage::of(ram, order, fault, e)));
                    }
                    Err(e) => {
                        let d = match self.reader.take_fault() {
                            Some(fault) => Damage::of(ram, order, fault, e),
                            None => Damage::whole_ram(ram, self.reader.root(), e),
                        };
                        return Some(Salvaged::Damage(d));
                    }
                    Ok(None) => self.runs = None,
                    Ok(Some((range, count))) => match self.check_overlap(order, range) {
                        Ok(()) => {
                            self.counts.add(order, count);
                            return Some(Salvaged::Run(BlockRun::new(range, order)));
                        }
                        Err(e @ WalkError::Overlap { covering, .. }) => {
                            // Either leaf may hold the wrong bit: both.
                            if let Some(runs) = &mut self.runs {
                                let fault = runs.scan_mut().leaf_fault();
                                runs.scan_mut().abandon_leaf();
                                let h = covering.order();
                                self.damage = self
                                    .checkers
                                    .get(usize::from(h.as_u8()))
                                    .map(|c| Damage::of(ram, h, c.scan.leaf_fault(), e));
                                return Some(Salvaged::Damage(Damage::of(ram, order, fault, e)));
                            }
                        }
                        Err(e) => {
                            self.failed = true;
                            self.runs = None;
                            return Some(Salvaged::Damage(Damage::whole_ram(
                                ram,
                                self.reader.root(),
                                e,
                            )));
                        }
                    },
                }
            }
            let order = self.remaining.highest()?;
            self.start_order(order);
        }
    }

    /// Starts `order`'s runs and re-arms the checkers of the orders above.
    fn start_order(&mut self, order: Order) {
        self.remaining = self.remaining.without(order);
        self.runs = Some(self.reader.runs(order));
        let mut higher = self.reader.orders().above(order);
        while let Some(h) = higher.highest() {
            higher = higher.without(h);
            if let Some(c) = self.checkers.get_mut(usize::from(h.as_u8())) {
                *c = Checker {
                    scan: self.reader.scan(h),
                    run: None,
                };
            }
        }
    }

    pub(crate) fn new(reader: RadixReader<'m, 'r, M, V>) -> Self {
        let empty = Checker {
            scan: OrderScan::empty(),
            run: None,
        };
        Self {
            remaining: reader.orders(),
            reader,
            runs: None,
            checkers: [empty; ORDERS],
            pending: RunBlocks::EMPTY,
            counts: OrderCounts::ZERO,
            failed: false,
            damage: None,
        }
    }

    /// Blocks yielded so far, per order (complete once the walk is done).
    pub fn counts(&self) -> &OrderCounts {
        &self.counts
    }

    /// Nodes entered so far.
    pub fn nodes(&self) -> u64 {
        self.reader.nodes()
    }

    fn fail(&mut self, e: WalkError) -> Option<Result<BlockRun, WalkError>> {
        self.failed = true;
        self.runs = None;
        self.pending = RunBlocks::EMPTY;
        Some(Err(e))
    }

    /// The next run of consecutive blocks of one order, in walk order.
    pub fn next_run(&mut self) -> Option<Result<BlockRun, WalkError>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(runs) = &mut self.runs {
                let order = runs.order();
                match runs.next_run(&mut self.reader) {
                    Err(e) => return self.fail(e),
                    Ok(None) => self.runs = None,
                    Ok(Some((range, count))) => {
                        if let Err(e) = self.check_overlap(order, range) {
                            return self.fail(e);
                        }
                        self.counts.add(order, count);
                        return Some(Ok(BlockRun::new(range, order)));
                    }
                }
            }
            let order = self.remaining.highest()?;
            self.start_order(order);
        }
    }

    /// Checks a run of `order` against the blocks of every higher order.
    #[inline]
    fn check_overlap(&mut self, order: Order, range: PhysRange) -> Result<(), WalkError> {
        let mut higher = self.reader.orders().above(order);
        if higher.is_empty() {
            return Ok(());
        }
        let start = range.start().as_u64();
        // A validated range is non-empty and ends at most at u64::MAX.
        let last = range.end().as_u64().wrapping_sub(1);
        while let Some(h) = higher.lowest() {
            higher = higher.without(h);
            let Some(checker) = self.checkers.get_mut(usize::from(h.as_u8())) else {
                continue;
            };
            loop {
                let (s, l) = match checker.run {
                    Some(run) => run,
                    None => match checker.scan.next_run(&mut self.reader, Visit::Again) {
                        // Salvage: a subtree the first scan of `h` reported.
                        Err(e) if self.reader.salvage && !super::salvage::ends_walk(&e) => {
                            continue;
                        }
                        Err(e) => return Err(e),
                        Ok(None) => break,
                        Ok(Some(raw)) => {
                            let s = raw.start.as_u64();
                            let bytes = raw.count.saturating_mul(h.bytes());
                            let l = s.saturating_add(bytes.saturating_sub(1));
                            checker.run = Some((s, l));
                            (s, l)
                        }
                    },
                };
                if l < start {
                    checker.run = None;
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
