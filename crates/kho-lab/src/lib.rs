//! # kho-lab — the KHO tracker debate made measurable
//!
//! | module       | what it holds                                                        |
//! |--------------|----------------------------------------------------------------------|
//! | [`fidelity`] | the memblock model's mainline per-block path against Linux's figures |
#![warn(missing_docs)]

pub mod fidelity;

pub use fidelity::{FidelityCase, FidelityResult, run_case};
pub mod capture;
pub mod trace;
