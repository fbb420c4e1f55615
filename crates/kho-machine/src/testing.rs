//! What the unit tests share (compiled for `cargo test` only): sizes,
//! builders of addresses, blocks and ranges from plain numbers (they panic
//! on a bad value: a test's literal is wrong, not its input), and a PC
//! machine's memory.

use kho::{Block, Order, Pfn, PhysAddr, PhysRange};

use crate::arena::{MemoryLayout, PhysMem};

/// 1 KiB.
pub(crate) const KIB: u64 = 1 << 10;
/// 1 MiB.
pub(crate) const MIB: u64 = 1 << 20;
/// 1 GiB.
pub(crate) const GIB: u64 = 1 << 30;

/// The RAM of a PC machine of `size` bytes ([`MemoryLayout::pc`]).
pub(crate) fn mem(size: u64) -> PhysMem {
    PhysMem::create(MemoryLayout::pc(size).unwrap()).unwrap()
}

/// The physical address `x`.
pub(crate) fn pa(x: u64) -> PhysAddr {
    PhysAddr::new(x)
}

/// The frame number `x`.
pub(crate) fn pfn(x: u64) -> Pfn {
    Pfn::new(x).unwrap()
}

/// The block of `order` at `phys`.
pub(crate) fn block(phys: u64, order: u8) -> Block {
    Block::new(pa(phys), Order::new(order)).unwrap()
}

/// The block of `order` at frame `pfn`.
pub(crate) fn pfn_block(pfn: u64, order: u8) -> Block {
    Block::from_pfn(self::pfn(pfn), Order::new(order)).unwrap()
}

/// `[start, end)`.
pub(crate) fn range(start: u64, end: u64) -> PhysRange {
    PhysRange::new(pa(start), pa(end)).unwrap()
}

/// `size` bytes from `start`.
pub(crate) fn range_at(start: u64, size: u64) -> PhysRange {
    PhysRange::from_start_size(pa(start), size).unwrap()
}

/// A deterministic permutation of `v` by `seed` (xorshift + Fisher-Yates).
pub(crate) fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}
