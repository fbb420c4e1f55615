//! Address newtypes: [`PhysAddr`], [`Pfn`], [`Order`], [`Block`],
//! [`PhysRange`].
//!
//! Arithmetic operators are deliberately not implemented: callers choose
//! `checked_add`, `checked_sub`, ... and say what happens on overflow.

use core::fmt;

/// log2 of the page size: KHO speaks 4 KiB pages only.
pub const PAGE_SHIFT: u32 = 12;
/// The page size in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// Errors of address construction and arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// An order above [`Order::MAX`]: its radix key would not fit in 64 bits.
    #[error("order {order} is above the largest order {max} whose radix key fits in 64 bits")]
    OrderTooLarge {
        /// The offending order.
        order: u32,
        /// The largest valid order.
        max: u8,
    },
    /// A block address that is not aligned to its own size.
    #[error("block at {phys} of order {order} is not aligned to its size")]
    Misaligned {
        /// The block's address.
        phys: PhysAddr,
        /// The block's order.
        order: Order,
    },
    /// A block or range whose end does not fit in the 64-bit physical space.
    #[error("range at {start} of {size:#x} bytes overflows the physical address space")]
    Overflow {
        /// Start of the range.
        start: PhysAddr,
        /// Its size in bytes.
        size: u64,
    },
    /// A range whose end lies before its start.
    #[error("range end {end} lies before its start {start}")]
    Inverted {
        /// Start of the range.
        start: PhysAddr,
        /// End of the range.
        end: PhysAddr,
    },
}

/// A physical byte address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// Physical address zero.
    pub const ZERO: Self = Self(0);

    /// Any 64-bit value is a physical address; validity against a machine is
    /// the business of [`crate::RamMap`].
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    /// The raw value, for the boundaries where bytes are written.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        debug_assert!(align.is_power_of_two());
        self.0 & (align.wrapping_sub(1)) == 0
    }

    /// Whether the address is page aligned.
    pub const fn is_page_aligned(self) -> bool {
        self.is_aligned(PAGE_SIZE)
    }

    /// Rounds down to a multiple of `align` (a power of two).
    pub const fn align_down(self, align: u64) -> Self {
        debug_assert!(align.is_power_of_two());
        Self(self.0 & !(align.wrapping_sub(1)))
    }

    /// Rounds up to a multiple of `align` (a power of two), `None` on overflow.
    pub const fn checked_align_up(self, align: u64) -> Option<Self> {
        debug_assert!(align.is_power_of_two());
        match self.0.checked_add(align.wrapping_sub(1)) {
            Some(v) => Some(Self(v & !(align.wrapping_sub(1)))),
            None => None,
        }
    }

    /// `self + bytes`, `None` on overflow.
    pub const fn checked_add(self, bytes: u64) -> Option<Self> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// `self - bytes`, `None` on underflow.
    pub const fn checked_sub(self, bytes: u64) -> Option<Self> {
        match self.0.checked_sub(bytes) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// Bytes from `base` up to `self`, `None` if `self < base`.
    pub const fn offset_from(self, base: Self) -> Option<u64> {
        self.0.checked_sub(base.0)
    }

    /// The frame that holds this address (rounds down).
    pub const fn pfn(self) -> Pfn {
        Pfn(self.0 >> PAGE_SHIFT)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A page frame number: a physical address divided by [`PAGE_SIZE`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Pfn(u64);

impl Pfn {
    /// The largest frame number whose address fits in 64 bits.
    pub const MAX: Self = Self(u64::MAX >> PAGE_SHIFT);

    /// A frame number; `None` if its address would not fit in 64 bits.
    pub const fn new(pfn: u64) -> Option<Self> {
        if pfn > Self::MAX.0 {
            None
        } else {
            Some(Self(pfn))
        }
    }

    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The address of the frame's first byte.
    pub const fn phys(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }

    /// `self + pages`, `None` past [`Pfn::MAX`].
    pub const fn checked_add(self, pages: u64) -> Option<Self> {
        match self.0.checked_add(pages) {
            Some(v) => Self::new(v),
            None => None,
        }
    }

    /// `self - pages`, `None` on underflow.
    pub const fn checked_sub(self, pages: u64) -> Option<Self> {
        match self.0.checked_sub(pages) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// Number of trailing zero bits: the largest order this frame is aligned
    /// to (64 for frame 0).
    pub const fn trailing_zeros(self) -> u32 {
        self.0.trailing_zeros()
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// log2 of a block's size in pages: a block of order `o` is `2^o` pages.
///
/// Valid orders are `0..=Order::MAX`. The radix key of order `o` has its
/// marker bit at `52 - o` and holds `phys >> (12 + o)`; order 52 would shift
/// by 64, so 51 (a block of 2^63 bytes) is the largest representable order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Order(u8);

impl Order {
    /// The largest order whose key fits in 64 bits.
    pub const MAX: Self = Self(51);
    /// Order 0: one page.
    pub const ZERO: Self = Self(0);

    /// An order, rejected above [`Order::MAX`].
    #[allow(clippy::cast_possible_truncation)] // in range, see the comment at the cast
    pub const fn try_new(order: u32) -> Result<Self, AddrError> {
        if order > Self::MAX.0 as u32 {
            Err(AddrError::OrderTooLarge {
                order,
                max: Self::MAX.0,
            })
        } else {
            // The check above bounds `order` by 51, so it fits in a u8.
            Ok(Self(order as u8))
        }
    }

    /// An order known at compile time; panics (at compile time in const
    /// contexts) above [`Order::MAX`].
    pub const fn new(order: u8) -> Self {
        assert!(order <= Self::MAX.0, "order above Order::MAX");
        Self(order)
    }

    /// The raw value.
    pub const fn as_u32(self) -> u32 {
        self.0 as u32
    }

    /// The raw value as a byte, for compact tables.
    pub const fn as_u8(self) -> u8 {
        self.0
    }

    /// Number of pages in a block of this order.
    pub const fn pages(self) -> u64 {
        1 << self.0
    }

    /// log2 of the block size in bytes: `PAGE_SHIFT + order` (at most 63).
    pub const fn shift(self) -> u32 {
        PAGE_SHIFT + self.0 as u32
    }

    /// Block size in bytes (at most 2^63, always representable).
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// Iterates every valid order, ascending.
    pub fn all() -> impl DoubleEndedIterator<Item = Order> + Clone {
        (0..=Self::MAX.0).map(Self)
    }
}

impl fmt::Debug for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Order({})", self.0)
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A preserved block: `2^order` pages at `phys`, naturally aligned.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    phys: PhysAddr,
    order: Order,
}

impl Block {
    /// A block; rejected if `phys` is not aligned to the block's size.
    /// (A block of a valid order always ends within the 64-bit space.)
    pub const fn new(phys: PhysAddr, order: Order) -> Result<Self, AddrError> {
        if phys.is_aligned(order.bytes()) {
            Ok(Self { phys, order })
        } else {
            Err(AddrError::Misaligned { phys, order })
        }
    }

    /// The block of `order` that holds `phys` (its address aligned down):
    /// infallible, for readers that know the alignment by construction.
    pub const fn containing(phys: PhysAddr, order: Order) -> Self {
        Self {
            phys: phys.align_down(order.bytes()),
            order,
        }
    }

    /// A block from a frame number.
    pub const fn from_pfn(pfn: Pfn, order: Order) -> Result<Self, AddrError> {
        Self::new(pfn.phys(), order)
    }

    /// The block's first byte.
    pub const fn phys(self) -> PhysAddr {
        self.phys
    }

    /// The block's first frame.
    pub const fn pfn(self) -> Pfn {
        self.phys.pfn()
    }

    /// The block's order.
    pub const fn order(self) -> Order {
        self.order
    }

    /// Size in bytes.
    pub const fn size(self) -> u64 {
        self.order.bytes()
    }

    /// The byte range the block covers. Its end may be 2^64 for the very last
    /// block of the space, which [`PhysRange`] cannot hold: `None` then.
    pub const fn range(self) -> Option<PhysRange> {
        match self.phys.checked_add(self.size()) {
            Some(end) => Some(PhysRange {
                start: self.phys,
                end,
            }),
            None => None,
        }
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Block({:#x}, order {})", self.phys.0, self.order.0)
    }
}

/// A half-open range of physical bytes `[start, end)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysRange {
    start: PhysAddr,
    end: PhysAddr,
}

impl PhysRange {
    /// `[start, end)`; rejected if `end < start`.
    pub const fn new(start: PhysAddr, end: PhysAddr) -> Result<Self, AddrError> {
        if end.0 < start.0 {
            Err(AddrError::Inverted { start, end })
        } else {
            Ok(Self { start, end })
        }
    }

    /// `[start, start + size)`; rejected on overflow.
    pub const fn from_start_size(start: PhysAddr, size: u64) -> Result<Self, AddrError> {
        match start.checked_add(size) {
            Some(end) => Ok(Self { start, end }),
            None => Err(AddrError::Overflow { start, size }),
        }
    }

    /// First byte.
    pub const fn start(self) -> PhysAddr {
        self.start
    }

    /// One past the last byte.
    pub const fn end(self) -> PhysAddr {
        self.end
    }

    /// Size in bytes.
    pub const fn size(self) -> u64 {
        self.end.0 - self.start.0
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(self) -> bool {
        self.end.0 == self.start.0
    }

    /// Whether `phys` lies inside.
    pub const fn contains(self, phys: PhysAddr) -> bool {
        self.start.0 <= phys.0 && phys.0 < self.end.0
    }

    /// Whether `other` lies entirely inside (an empty `other` is inside if its
    /// start is within `[start, end]`).
    pub const fn contains_range(self, other: PhysRange) -> bool {
        self.start.0 <= other.start.0 && other.end.0 <= self.end.0
    }

    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(self, other: PhysRange) -> bool {
        self.start.0 < other.end.0 && other.start.0 < self.end.0
    }
}

impl fmt::Debug for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end.0)
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The sorted union of `ranges`: overlapping or touching ranges merged,
/// empty ones dropped.
#[cfg(feature = "alloc")]
pub fn merge_ranges(mut ranges: alloc::vec::Vec<PhysRange>) -> alloc::vec::Vec<PhysRange> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_unstable();
    let mut out: alloc::vec::Vec<PhysRange> = alloc::vec::Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests;
