//! The validating reader of an untrusted radix tree: the blocks in Linux's
//! walk order ([`Walk`]) and, through the same engine, the coalescer's
//! ranges ([`crate::Coalesce`]). How it reads and what it checks, in which
//! order: [`RadixReader`].
//!
//! | module        | what it holds                                                  |
//! |---------------|----------------------------------------------------------------|
//! | `error`       | [`WalkError`], the reader's one error enum                     |
//! | `budget`      | [`NodeBudget`], [`VisitedSet`] (and `NodeSet`): the bounds     |
//! | `orders`      | [`OrderSet`], [`OrderCounts`]                                  |
//! | `run`         | runs as found ([`RawRun`]), the [`RamWindow`] that checks them, |
//! |               | runs as yielded ([`BlockRun`], [`RunBlocks`])                  |
//! | `engine`      | the validating descent both the walk and the coalescer drive:  |
//! |               | the opened tree ([`RadixReader`]), the order scans, the child  |
//! |               | checks                                                         |
//! | `linux_order` | [`Walk`], with its overlap checkers                            |
//! | `salvage`     | ours: [`SalvageWalk`], the walk that reports a [`Damage`] per  |
//! |               | broken node and goes on ([`OnCorruption::Salvage`])            |

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

mod budget;
pub(crate) mod engine;
mod error;
mod linux_order;
mod orders;
mod run;
mod salvage;

#[cfg(feature = "alloc")]
pub use budget::NodeSet;
pub use budget::{NodeBudget, VisitedFull, VisitedSet};
pub use engine::RadixReader;
pub use error::WalkError;
pub use linux_order::Walk;
pub use orders::{ORDERS, OrderCounts, OrderSet};
pub use run::{BlockRun, RunBlocks};
pub(crate) use run::{RamWindow, RawRun};
pub use salvage::{Damage, OnCorruption, SalvageWalk, Salvaged, UnknownOnCorruption};

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
