//! # kho-lab — the KHO tracker debate made measurable
//!
//! | module       | what it holds                                                        |
//! |--------------|----------------------------------------------------------------------|
//! | [`fidelity`] | the memblock model's mainline per-block path against Linux's figures |
//! | [`image`]    | memory images: ELF cores and raw images as a `PageMap`; the core writer |
//! | [`inspect`]  | `kho inspect`: decode and validate a handover from a memory image    |
//! | [`peers`]    | the tracker designs behind one trait: xarray (6.16), radix-mainline, maple, kho |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod fidelity;
pub mod image;
pub mod inspect;
pub mod peers;
#[cfg(feature = "testing")]
pub mod testing;

pub use fidelity::{FidelityCase, FidelityResult, run_case};
pub use image::{ImageError, MemImage, dump_old_kernel, write_core};
pub use inspect::{FdtSource, Finding, Format, InspectOptions, Inspection, inspect};
pub mod bench;
pub mod capture;
pub mod trace;
