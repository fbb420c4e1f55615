//! What the tracker preserved, as the structure readers ask it.
//!
//! Glossary:
//!
//! | name          | meaning                                                              |
//! |---------------|----------------------------------------------------------------------|
//! | tracker       | the preserved-memory map: the radix tree (or a set read from it)    |
//! | block         | one preserved folio: a physical address and an order ([`Block`])    |
//! | tracker page  | a page of the radix tree itself: not a block, never preserved       |
//! | expected      | the block a structure says it occupies: its page and its order      |
//!
//! Linux's next kernel trusts that a structure's pages are preserved: it
//! calls `kho_restore_pages()` / `kho_restore_folio()` and only then notices a
//! page missing or an order mismatch (the restore checks the `KHOP` magic and
//! the order in `page->private`). A reader of a dump can say it before
//! anything is restored: [`PreservedLookup`] answers "which preserved block
//! holds this address", and [`expect_block`] turns the answer into a typed
//! [`Unpreserved`] fault.
//!
//! With `alloc`, [`PreservedSet`] is the lookup built from a validated walk
//! (sorted blocks, binary search), and [`TrackerPages`] records the tree's
//! own pages during that walk, for the cross-layer checks.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use crate::addr::{Block, Order, PhysAddr};

/// Answers which preserved block holds an address.
pub trait PreservedLookup {
    /// The preserved block that contains `phys`, if any.
    fn block_containing(&self, phys: PhysAddr) -> Option<Block>;
}

impl<T: PreservedLookup + ?Sized> PreservedLookup for &T {
    fn block_containing(&self, phys: PhysAddr) -> Option<Block> {
        (**self).block_containing(phys)
    }
}

/// An optional tracker for the readers: `None` skips the preservation checks.
pub type Tracker<'t> = Option<&'t dyn PreservedLookup>;

/// A structure's page or folio that the tracker does not hold as expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unpreserved {
    /// No preserved block holds the address.
    #[error("{expected:?} is not preserved")]
    Missing {
        /// The block the structure occupies.
        expected: Block,
    },
    /// A preserved block holds the address, but not as this very block: a
    /// different order, or a larger block it lies inside.
    #[error("{expected:?} is preserved as {found:?}")]
    OtherOrder {
        /// The block the structure occupies.
        expected: Block,
        /// The preserved block that holds its address.
        found: Block,
    },
}

/// Checks that `tracker` holds exactly `expected`.
pub(crate) fn expect_block(
    tracker: &dyn PreservedLookup,
    expected: Block,
) -> Result<(), Unpreserved> {
    match tracker.block_containing(expected.phys()) {
        None => Err(Unpreserved::Missing { expected }),
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(Unpreserved::OtherOrder { expected, found }),
    }
}

/// Checks that the page at `phys` is preserved as an order-0 block, as
/// `kho_alloc_preserve()` leaves every structure page.
pub(crate) fn expect_page(tracker: Tracker<'_>, phys: PhysAddr) -> Result<(), Unpreserved> {
    match (tracker, Block::new(phys, Order::ZERO)) {
        (Some(t), Ok(b)) => expect_block(t, b),
        _ => Ok(()),
    }
}

#[cfg(feature = "alloc")]
pub use set::{PreservedSet, TrackerError, TrackerPages};

#[cfg(feature = "alloc")]
mod set {
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    use super::PreservedLookup;
    use crate::addr::{Block, PhysAddr};
    use crate::mem::{PageMap, RamMap};
    use crate::walk::{NodeBudget, RadixReader, VisitedFull, VisitedSet, WalkError};

    /// Why a [`PreservedSet`] could not be built.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum TrackerError {
        /// The walk of the tree failed.
        #[error("walk of the preserved-memory map failed: {0}")]
        Walk(#[from] WalkError),
        /// Two blocks share memory (the walker rejects this; a hand-made list
        /// may not).
        #[error("preserved blocks {first:?} and {second:?} overlap")]
        Overlap {
            /// The block with the lower address.
            first: Block,
            /// The block that starts inside it.
            second: Block,
        },
    }

    /// The preserved blocks, sorted by address and disjoint.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct PreservedSet {
        blocks: Vec<Block>,
    }

    /// The pages of the radix tree itself, recorded during a walk (a
    /// [`VisitedSet`], so it also tells a node reached twice).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct TrackerPages(BTreeSet<PhysAddr>);

    impl TrackerPages {
        /// An empty set.
        pub const fn new() -> Self {
            Self(BTreeSet::new())
        }

        /// The pages, ascending.
        pub fn iter(&self) -> impl Iterator<Item = PhysAddr> + '_ {
            self.0.iter().copied()
        }

        /// How many pages.
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// Whether there are none.
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        /// Whether `page` is one of them.
        pub fn contains(&self, page: PhysAddr) -> bool {
            self.0.contains(&page)
        }
    }

    impl VisitedSet for TrackerPages {
        fn insert(&mut self, node: PhysAddr) -> Result<bool, VisitedFull> {
            Ok(self.0.insert(node))
        }
    }

    impl PreservedSet {
        /// Sorts `blocks` and checks that no two share memory.
        pub fn from_blocks(blocks: impl IntoIterator<Item = Block>) -> Result<Self, TrackerError> {
            let mut blocks: Vec<Block> = blocks.into_iter().collect();
            blocks.sort_unstable_by_key(|b| b.phys());
            for pair in blocks.windows(2) {
                if let [first, second] = pair {
                    let overlap = match first.range() {
                        Some(r) => r.contains(second.phys()),
                        None => true,
                    };
                    if overlap {
                        return Err(TrackerError::Overlap {
                            first: *first,
                            second: *second,
                        });
                    }
                }
            }
            Ok(Self { blocks })
        }

        /// Walks the radix tree at `root` (validating it, see
        /// [`RadixReader`]) and collects its blocks and its own pages.
        pub fn read_tree<M: PageMap + ?Sized>(
            map: &M,
            ram: RamMap<'_>,
            root: PhysAddr,
            budget: NodeBudget,
        ) -> Result<(Self, TrackerPages), TrackerError> {
            let mut pages = TrackerPages::new();
            let blocks = {
                let reader = RadixReader::open(map, ram, root, &mut pages, budget)?;
                reader.walk().collect::<Result<Vec<Block>, WalkError>>()?
            };
            Ok((Self::from_blocks(blocks)?, pages))
        }

        /// The blocks, ascending by address.
        pub fn blocks(&self) -> &[Block] {
            &self.blocks
        }

        /// How many blocks.
        pub fn len(&self) -> usize {
            self.blocks.len()
        }

        /// Whether there are none.
        pub fn is_empty(&self) -> bool {
            self.blocks.is_empty()
        }

        /// Total preserved bytes.
        pub fn bytes(&self) -> u64 {
            self.blocks
                .iter()
                .fold(0u64, |acc, b| acc.saturating_add(b.size()))
        }
    }

    impl PreservedLookup for PreservedSet {
        fn block_containing(&self, phys: PhysAddr) -> Option<Block> {
            let i = self.blocks.partition_point(|b| b.phys() <= phys);
            let b = *self.blocks.get(i.checked_sub(1)?)?;
            b.range().filter(|r| r.contains(phys)).map(|_| b)
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic
)]
mod tests;
