//! Runs: consecutive blocks of one order, as an order scan finds them
//! ([`RawRun`]) and once checked against the machine by a [`RamWindow`]
//! ([`BlockRun`]).

use core::fmt;

use crate::addr::{Block, Order, PhysAddr, PhysRange};
use crate::mem::RamMap;
use crate::walk::WalkError;

/// Consecutive blocks of one order, validated: inside RAM, outside the
/// forbidden ranges, not covering nor covered by a block of another order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRun {
    range: PhysRange,
    order: Order,
}

impl BlockRun {
    /// A run whose range was validated for `order`.
    pub(crate) const fn new(range: PhysRange, order: Order) -> Self {
        Self { range, order }
    }

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

impl RunBlocks {
    /// No block.
    pub(crate) const EMPTY: Self = Self {
        next: PhysAddr::ZERO,
        left: 0,
        order: Order::ZERO,
    };
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

/// A run as an order scan finds it, not checked yet: the first block's
/// address and the number of blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawRun {
    pub(crate) start: PhysAddr,
    pub(crate) count: u64,
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
