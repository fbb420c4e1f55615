//! # kho-lab — the KHO tracker debate made measurable
#![warn(missing_docs)]
