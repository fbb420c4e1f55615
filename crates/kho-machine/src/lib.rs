//! # kho-machine — a simulated machine whose boot-time memory management costs what Linux's costs
#![warn(missing_docs)]
