//! The radix key of a block ([`RadixKey`], whose documentation draws its
//! layout) and the indices it is cut into: [`Level`], [`TableIndex`],
//! [`LeafBit`], with the one table of level shifts.

use core::fmt;

use crate::addr::{Block, Order, PhysAddr};

/// Errors decoding a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key zero has no marker bit.
    #[error("radix key 0 has no order marker bit")]
    Zero,
    /// The marker bit is above bit 52 (a root entry beyond 3).
    #[error("radix key {key:#x} has its order marker at bit {bit}, above bit 52")]
    MarkerTooHigh {
        /// The key.
        key: u64,
        /// Its highest set bit (0-based).
        bit: u32,
    },
    /// The marker encodes order 52, whose block would span the whole space.
    #[error("radix key {key:#x} encodes order {order}, above the largest valid order")]
    OrderTooLarge {
        /// The key.
        key: u64,
        /// The order it encodes.
        order: u32,
    },
}

/// Bit position of the order-0 marker: `64 - PAGE_SHIFT`.
pub const ORDER_0_MARKER: u32 = 52;
/// Number of inner levels (level 1 to 5); the leaf is level 0.
pub const INNER_LEVELS: u8 = 5;
/// Entries per inner node.
pub const TABLE_ENTRIES: usize = 512;
/// Bits per leaf.
pub const LEAF_BITS: u32 = 32768;
/// log2 of [`LEAF_BITS`]: the key bits a leaf resolves.
pub const LEAF_SHIFT: u32 = 15;
/// log2 of [`TABLE_ENTRIES`]: the key bits an inner level resolves.
pub const TABLE_SHIFT: u32 = 9;
/// Root entries that a valid key can use (marker bit at most 52).
pub const ROOT_ENTRIES_IN_USE: u16 = 4;
/// Number of levels, the leaf included.
pub const LEVELS: usize = INNER_LEVELS as usize + 1;
/// Slots of a [`PerLevel`] table: the levels, padded to a power of two so
/// that a level masked by `LEVEL_SLOTS - 1` indexes it with no bounds
/// check (a level is at most 5: the mask never changes it).
const LEVEL_SLOTS: usize = 8;

/// A level of the tree: 0 is the leaf (bitmap), 5 the root.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(u8);

impl Level {
    /// The leaf level.
    pub const LEAF: Self = Self(0);
    /// The root level.
    pub const ROOT: Self = Self(INNER_LEVELS);

    /// A level, `None` above the root.
    pub const fn new(level: u8) -> Option<Self> {
        if level <= INNER_LEVELS {
            Some(Self(level))
        } else {
            None
        }
    }

    /// The raw value.
    pub const fn as_u8(self) -> u8 {
        self.0
    }

    /// The level as an index into a per-level array (`0..6`).
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }

    /// The level's slot in a [`PerLevel`] table (see [`LEVEL_SLOTS`]).
    #[inline(always)]
    const fn slot(self) -> usize {
        self.0 as usize & (LEVEL_SLOTS - 1)
    }

    /// The level below, `None` for the leaf.
    pub const fn child(self) -> Option<Self> {
        match self.0.checked_sub(1) {
            Some(l) => Some(Self(l)),
            None => None,
        }
    }

    /// The level above, `None` for the root.
    pub const fn parent(self) -> Option<Self> {
        Self::new(self.0 + 1)
    }

    /// Whether this is the leaf level.
    pub const fn is_leaf(self) -> bool {
        self.0 == 0
    }

    /// The lowest key bit this inner level indexes: `15 + 9 * (level - 1)`;
    /// 0 for the leaf, whose bit is the key's low 15 bits. The one place
    /// the level shifts are defined (level 1: 15, 2: 24, 3: 33, 4: 42,
    /// root: 51).
    #[inline(always)]
    pub const fn shift(self) -> u32 {
        let level = self.0 as u32;
        // Branch-free: `is_inner` zeroes the leaf's value.
        let is_inner = (level != 0) as u32;
        (LEAF_SHIFT + TABLE_SHIFT * level - TABLE_SHIFT) * is_inner
    }

    /// Levels from the root down to level 1.
    pub fn inner_top_down() -> impl Iterator<Item = Level> + Clone {
        (1..=INNER_LEVELS).rev().map(Self)
    }
}

impl fmt::Debug for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Level({})", self.0)
    }
}

/// An entry index of an inner node, always in `0..512`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TableIndex(u16);

impl TableIndex {
    /// An index, `None` at 512 or above.
    pub const fn new(index: u16) -> Option<Self> {
        if (index as usize) < TABLE_ENTRIES {
            Some(Self(index))
        } else {
            None
        }
    }

    /// Masks to the low 9 bits.
    #[allow(clippy::cast_possible_truncation)] // masked to 9 bits
    pub const fn new_truncate(index: u64) -> Self {
        Self((index & (TABLE_ENTRIES as u64 - 1)) as u16)
    }

    /// The index, usable to index a node's entries.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }

    /// The raw value.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// The raw value, widened.
    pub const fn as_u64(self) -> u64 {
        self.0 as u64
    }

    /// Entry 0: the spine's entry.
    pub const ZERO: Self = Self(0);

    /// Every index, ascending.
    pub fn all() -> impl DoubleEndedIterator<Item = TableIndex> + Clone {
        (0..TABLE_ENTRIES as u16).map(Self)
    }
}

/// One value per level, indexed by [`Level`]: the nodes of a path, the
/// spine. Never out of bounds, and no bounds check: a level's slot is
/// masked into the padded table (see [`LEVEL_SLOTS`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PerLevel<T>([T; LEVEL_SLOTS]);

impl<T: Copy> PerLevel<T> {
    /// `value` at every level.
    pub(crate) const fn splat(value: T) -> Self {
        Self([value; LEVEL_SLOTS])
    }
}

impl<T> core::ops::Index<Level> for PerLevel<T> {
    type Output = T;

    #[inline(always)]
    fn index(&self, level: Level) -> &T {
        &self.0[level.slot()]
    }
}

impl<T> core::ops::IndexMut<Level> for PerLevel<T> {
    #[inline(always)]
    fn index_mut(&mut self, level: Level) -> &mut T {
        &mut self.0[level.slot()]
    }
}

/// A bit index within a leaf, always in `0..32768`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LeafBit(u16);

impl LeafBit {
    /// A bit index, `None` at 32768 or above.
    pub const fn new(bit: u16) -> Option<Self> {
        if (bit as u32) < LEAF_BITS {
            Some(Self(bit))
        } else {
            None
        }
    }

    /// Masks to the low 15 bits.
    #[allow(clippy::cast_possible_truncation)] // masked to 15 bits
    pub const fn new_truncate(bit: u64) -> Self {
        Self((bit & (LEAF_BITS as u64 - 1)) as u16)
    }

    /// The u64 word of the leaf that holds this bit.
    pub const fn word(self) -> usize {
        (self.0 / 64) as usize
    }

    /// The bit's mask within its word.
    pub const fn mask(self) -> u64 {
        1 << (self.0 % 64)
    }

    /// The raw value.
    pub const fn as_u16(self) -> u16 {
        self.0
    }
}

/// The radix key of a block.
///
/// ```text
///  key = (1 << (52 - order)) | (phys >> (12 + order))
///
///   63   60 59      51 50      42 41      33 32      24 23      15 14          0
///  +-------+----------+----------+----------+----------+----------+------------+
///  | zero  | level 5  | level 4  | level 3  | level 2  | level 1  | leaf bit   |
///  |       | (root)   |          |          |          |          | (15 bits)  |
///  +-------+----------+----------+----------+----------+----------+------------+
/// ```
///
/// The marker bit `52 - order` tells the order back: `order = 53 - fls64(key)`.
/// A valid key's highest set bit is at most 52, so only root entries 0..=3
/// can be in use. Ascending keys visit higher orders first, and ascending
/// addresses within an order: that is Linux's walk order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct RadixKey(u64);

impl RadixKey {
    /// Encodes a block: `(1 << (52 - order)) | (phys >> (12 + order))`.
    pub const fn encode(block: Block) -> Self {
        let order = block.order();
        let marker = 1u64 << (ORDER_0_MARKER - order.as_u32());
        Self(marker | (block.phys().as_u64() >> order.shift()))
    }

    /// Takes a raw key as it is, for keys rebuilt from a tree path; decode it
    /// with [`RadixKey::decode`] before trusting it.
    pub const fn from_raw(key: u64) -> Self {
        Self(key)
    }

    /// Rebuilds the key a path through the tree stands for: the root index
    /// down to the level-1 index, then the leaf bit.
    pub const fn from_path(indices: [TableIndex; INNER_LEVELS as usize], bit: LeafBit) -> Self {
        let mut key = bit.0 as u64;
        let mut i = 0;
        while i < INNER_LEVELS as usize {
            // indices[0] is the root (level 5), indices[4] is level 1.
            let level = Level(INNER_LEVELS - i as u8);
            key |= (indices[i].0 as u64) << level.shift();
            i += 1;
        }
        Self(key)
    }

    /// The raw value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Decodes back to a block: `order = 53 - fls64(key)`,
    /// `phys = key << (12 + order)` truncated to 64 bits.
    #[allow(clippy::cast_possible_truncation)] // order <= 51, checked before the cast
    pub const fn decode(self) -> Result<Block, KeyError> {
        if self.0 == 0 {
            return Err(KeyError::Zero);
        }
        let bit = 63 - self.0.leading_zeros();
        if bit > ORDER_0_MARKER {
            return Err(KeyError::MarkerTooHigh { key: self.0, bit });
        }
        let order = ORDER_0_MARKER - bit;
        if order > Order::MAX.as_u32() {
            return Err(KeyError::OrderTooLarge { key: self.0, order });
        }
        // order <= 51 was checked just above.
        let order = Order::new(order as u8);
        let phys = PhysAddr::new(self.0 << order.shift());
        match Block::new(phys, order) {
            Ok(block) => Ok(block),
            // The shift leaves the low `order.shift()` bits clear.
            Err(_) => Err(KeyError::OrderTooLarge {
                key: self.0,
                order: order.as_u32(),
            }),
        }
    }

    /// The entry this key selects at an inner level (ignored for the leaf).
    pub const fn index(self, level: Level) -> TableIndex {
        TableIndex::new_truncate(self.0 >> level.shift())
    }

    /// The bit this key selects in its leaf.
    pub const fn leaf_bit(self) -> LeafBit {
        LeafBit::new_truncate(self.0)
    }

    /// The first key of an order: its marker bit alone (address 0).
    pub const fn first_of(order: Order) -> Self {
        Self(1 << (ORDER_0_MARKER - order.as_u32()))
    }
}

impl fmt::Debug for RadixKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RadixKey({:#x})", self.0)
    }
}

#[cfg(test)]
mod tests;
