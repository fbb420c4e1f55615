//! # kho-lab — the KHO tracker debate made measurable
//!
//! | module       | what it holds                                                        |
//! |--------------|----------------------------------------------------------------------|
//! | [`fidelity`] | the memblock model's mainline per-block path against Linux's figures |
//! | [`peers`]    | the tracker designs behind one trait: xarray (6.16), radix-mainline, maple, kho |
#![warn(missing_docs)]

pub mod fidelity;
pub mod peers;

pub use fidelity::{FidelityCase, FidelityResult, run_case};
