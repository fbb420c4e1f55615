//! # kho-lab — the KHO tracker debate made measurable
//!
//! | module              | what it holds                                                        |
//! |---------------------|----------------------------------------------------------------------|
//! | [`peers`]           | the tracker designs behind one trait: xarray (6.16), radix-mainline, maple, kho |
//! | [`bench`](mod@bench) | `kho bench`: the matrix, the scaling sweep, the report               |
//! | [`fidelity`]        | the memblock model's mainline per-block path against Linux's figures |
//! | [`trace`]           | trace files: captured or replayed lists of blocks                    |
//! | [`capture`]         | capturing running processes' folios into a trace                     |
//! | [`image`]           | memory images: ELF cores and raw images as a `PageMap`; the core writer |
//! | [`inspect`](mod@inspect) | `kho inspect`: decode and validate a handover from a memory image |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod capture;
pub mod fidelity;
pub mod image;
pub mod inspect;
pub mod peers;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;

pub use fidelity::{FidelityCase, FidelityResult, run_case};
pub use image::{ImageError, MemImage, dump_old_kernel, write_core};
pub use inspect::{
    Collect, FdtSource, Finding, InspectOptions, InspectSink, Inspection, MapFormat,
    UnknownMapFormat, inspect, inspect_to,
};
