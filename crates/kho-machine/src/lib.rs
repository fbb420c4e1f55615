//! # kho-machine — a simulated machine whose boot-time memory management costs what Linux's costs
//!
//! | module     | what it holds                                                        |
//! |------------|----------------------------------------------------------------------|
//! | [`arena`]  | physical memory: a shared memfd mapping laid out by a RAM map        |
#![warn(missing_docs)]

pub mod arena;

pub use arena::{ArenaError, MemoryLayout, PhysMem};
