//! **Ours**: the salvage walk. Linux has one answer to a broken handover:
//! `kho_memory_init` (torvalds/linux@019fc368,
//! `kernel/liveupdate/kexec_handover.c`) clears `kho_in.fdt_phys` when
//! `kho_mem_retrieve` fails, and `kho_populate` prints "disabling KHO
//! revival" when the FDT, its compatible or `preserved-memory-map` is
//! wrong: the kernel boots without KHO and every preserved page goes to
//! the allocator. That stays the default ([`OnCorruption::Reject`]: the
//! plain [`crate::Walk`] ends at the first [`WalkError`]).
//!
//! [`OnCorruption::Salvage`] keeps what validates. [`SalvageWalk`] yields
//! the same runs as the walk, in the same order, plus one [`Damage`] per
//! node that breaks an invariant, and goes on past it:
//!
//! | what broke                                              | damaged node       | span reserved                          | walk   |
//! |---------------------------------------------------------|--------------------|----------------------------------------|--------|
//! | a child pointer (unaligned, outside RAM, forbidden, unmapped) | the child (its level) | the entry's keys: its subtree       | goes on |
//! | a run of a leaf (outside RAM, forbidden)                | the leaf (level 0) | the leaf's keys of its order           | goes on at the next leaf |
//! | an overlap of two orders                                | both leaves        | each leaf's keys                       | goes on |
//! | the root, a root entry, the spine (`open`)              | the root (level 5) | all RAM                                | ends   |
//! | a node reached twice, the node budget, the visited set  | the root (level 5) | all RAM (which pointer lies is unknown) | ends  |
//!
//! A subtree's span follows from its key prefix: the keys
//! `[first, first + 2^n)` of order `o` hold the blocks at
//! `[(first - marker) << (12 + o), + 2^(n + 12 + o))`, where `marker` =
//! `2^(52 - o)` is the order's marker bit ([`crate::RadixKey`]); a spine
//! node's entries span every order, so the spine's damage is all RAM.
//! Spans are clipped to the RAM hull (lowest RAM byte to the end of the
//! last RAM range). A block yielded before its leaf turned out damaged
//! lies inside the damage's span: the caller must treat every block of
//! the damage's order that meets its span as damaged (never restore it,
//! reserve the span); blocks of other orders there validated in their
//! own subtrees (an overlap damages both orders' leaves).
//!
//! What no reader of this ABI can see is not salvaged: a cleared leaf bit,
//! or a pointer turned into another valid, unvisited page whose contents
//! validate, keep every invariant (the reject default accepts them too).

use core::fmt;

use crate::addr::{Order, PhysAddr, PhysRange};
use crate::key::{Level, ORDER_0_MARKER};
use crate::mem::{PageMap, RamMap};
use crate::walk::engine::Fault;
use crate::walk::{BlockRun, NodeBudget, OrderCounts, RadixReader, VisitedSet, Walk, WalkError};

/// What the new kernel does with a handover that breaks an invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnCorruption {
    /// Linux: boot without KHO, trust nothing of the handover.
    #[default]
    Reject,
    /// **Ours**: keep every block that validates, reserve (never free,
    /// never restore) the span of each damaged node, report it.
    Salvage,
}

impl OnCorruption {
    /// Every mode.
    pub const ALL: [Self; 2] = [Self::Reject, Self::Salvage];

    /// The command-line name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Salvage => "salvage",
        }
    }
}

impl fmt::Display for OnCorruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is neither `reject` nor `salvage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown --on-corruption mode (reject, salvage)")]
pub struct UnknownOnCorruption;

impl core::str::FromStr for OnCorruption {
    type Err = UnknownOnCorruption;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or(UnknownOnCorruption)
    }
}

/// A node of the tree that broke an invariant, and the physical span its
/// subtree covers: nothing in it may be freed or restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// The damaged node: the child a pointer names (as found), the leaf,
    /// or the root.
    pub node: PhysAddr,
    /// Its level (0: a leaf; 5: the root, all RAM).
    pub level: Level,
    /// The order whose keys the subtree holds (`None`: every order, all
    /// RAM). Blocks of other orders in the span validated in their own
    /// subtrees.
    pub order: Option<Order>,
    /// The bytes its subtree covers, clipped to the RAM hull.
    pub span: PhysRange,
    /// The broken invariant.
    pub error: WalkError,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} (level {}, order {}): span {} reserved: {}",
            self.node,
            self.level.as_u8(),
            self.order.map_or(-1, |o| i32::from(o.as_u8())),
            self.span,
            self.error
        )
    }
}

/// The RAM hull: the lowest RAM byte to the end of the last RAM range.
fn hull(ram: RamMap<'_>) -> (u64, u64) {
    let r = ram.ram();
    (
        r.first().map_or(0, |r| r.start().as_u64()),
        r.last().map_or(0, |r| r.end().as_u64()),
    )
}

impl Damage {
    /// All RAM, `root` the node: nothing of the tree can be trusted.
    pub fn whole_ram(ram: RamMap<'_>, root: PhysAddr, error: WalkError) -> Self {
        let (lo, hi) = hull(ram);
        Self {
            node: root,
            level: Level::ROOT,
            order: None,
            span: PhysRange::new(PhysAddr::new(lo), PhysAddr::new(hi)).unwrap_or_default(),
            error,
        }
    }

    /// The damage of `fault`, a subtree of `order`.
    pub(crate) fn of(ram: RamMap<'_>, order: Order, fault: Fault, error: WalkError) -> Self {
        Self {
            node: fault.node,
            level: fault.level,
            order: Some(order),
            span: key_span(ram, order, fault.first_key, fault.keys_log2),
            error,
        }
    }
}

/// The bytes the keys `[first, first + 2^keys_log2)` of `order` cover,
/// clipped to the RAM hull (empty, at the clip, if they miss it).
fn key_span(ram: RamMap<'_>, order: Order, first: u64, keys_log2: u32) -> PhysRange {
    let (lo, hi) = hull(ram);
    let marker = 1u64.wrapping_shl(ORDER_0_MARKER.saturating_sub(order.as_u32()));
    let shift = order.shift();
    // Dropping the marker: the key's offset in its order, shifted to bytes
    // (at most 2^64: u128).
    let start = u128::from(first.wrapping_sub(marker)).wrapping_shl(shift);
    let bits = keys_log2.saturating_add(shift).min(64);
    let end = start.saturating_add(1u128.wrapping_shl(bits));
    let clip = |v: u128| u64::try_from(v.clamp(u128::from(lo), u128::from(hi))).unwrap_or(hi);
    PhysRange::new(PhysAddr::new(clip(start)), PhysAddr::new(clip(end))).unwrap_or_default()
}

/// Errors after which no part of the tree can be trusted: which of two
/// pointers to one node lies is unknown; a budget or the visited set ran
/// out.
pub(crate) fn ends_walk(e: &WalkError) -> bool {
    matches!(
        e,
        WalkError::NodeReachedTwice { .. }
            | WalkError::BudgetExceeded { .. }
            | WalkError::VisitedSetFull { .. }
            | WalkError::RootUnaligned { .. }
            | WalkError::RootOutsideRam { .. }
            | WalkError::RootForbidden { .. }
            | WalkError::RootEntryBeyond3 { .. }
            | WalkError::InvalidKey { .. }
    )
}

/// One item of a [`SalvageWalk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Salvaged {
    /// A run that validated (it may still meet a later [`Damage`]'s span).
    Run(BlockRun),
    /// A damaged node.
    Damage(Damage),
}

/// **Ours**: the walk in salvage mode (see the module doc): the runs that
/// validate in Linux walk order, and a [`Damage`] for each node that does
/// not.
pub struct SalvageWalk<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> {
    walk: Option<Walk<'m, 'r, M, V>>,
    opened: Option<Damage>,
}

impl<M: PageMap + ?Sized, V: VisitedSet> fmt::Debug for SalvageWalk<'_, '_, M, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalvageWalk")
            .field("walk", &self.walk)
            .field("opened", &self.opened)
            .finish()
    }
}

impl<'m, 'r, M: PageMap + ?Sized, V: VisitedSet> SalvageWalk<'m, 'r, M, V> {
    /// Opens the tree at `root` as [`RadixReader::open`] does; a tree that
    /// does not open yields one [`Damage`] of all RAM.
    pub fn open(
        map: &'m M,
        ram: RamMap<'r>,
        root: PhysAddr,
        visited: V,
        budget: NodeBudget,
    ) -> Self {
        match RadixReader::open(map, ram, root, visited, budget) {
            Ok(reader) => Self::new(reader),
            Err(e) => Self {
                walk: None,
                opened: Some(Damage::whole_ram(ram, root, e)),
            },
        }
    }

    /// The salvage walk of an opened tree.
    pub fn new(reader: RadixReader<'m, 'r, M, V>) -> Self {
        let mut walk = reader.walk();
        walk.reader_mut().salvage = true;
        Self {
            walk: Some(walk),
            opened: None,
        }
    }

    /// Blocks yielded so far, per order.
    pub fn counts(&self) -> OrderCounts {
        self.walk
            .as_ref()
            .map_or(OrderCounts::ZERO, |w| *w.counts())
    }

    /// Nodes entered so far.
    pub fn nodes(&self) -> u64 {
        self.walk.as_ref().map_or(0, |w| w.nodes())
    }
}

impl<M: PageMap + ?Sized, V: VisitedSet> Iterator for SalvageWalk<'_, '_, M, V> {
    type Item = Salvaged;

    fn next(&mut self) -> Option<Salvaged> {
        if let Some(d) = self.opened.take() {
            return Some(Salvaged::Damage(d));
        }
        self.walk.as_mut()?.next_salvaged()
    }
}

impl<M: PageMap + ?Sized, V: VisitedSet> core::iter::FusedIterator for SalvageWalk<'_, '_, M, V> {}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]
mod tests;
