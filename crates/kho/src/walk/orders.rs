//! Sets of orders and per-order block counts.

use core::fmt;

use crate::addr::Order;

/// Number of valid orders (`0..=51`).
pub const ORDERS: usize = 52;

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

    /// The smallest order in the set.
    pub fn lowest(self) -> Option<Order> {
        if self.0 == 0 {
            return None;
        }
        order_of_bit(self.0.trailing_zeros())
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
