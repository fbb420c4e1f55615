//! memblock's `reserve_mem` handover: the `memblock` subnode's blob, an FDT
//! (`memblock-v1`) of named regions (`reserve-mem-v1`).
//!
//! Glossary:
//!
//! | name      | meaning                                                                |
//! |-----------|------------------------------------------------------------------------|
//! | region    | a `reserve_mem=size:align:name` reservation of the command line        |
//! | blob      | one page: an FDT, preserved at order 0 (`kho_preserve_pages(page, 1)`) |
//!
//! # Format
//!
//! | node      | property     | value                                  |
//! |-----------|--------------|----------------------------------------|
//! | `/`       | `compatible` | `"memblock-v1"`                        |
//! | `/<name>` | `compatible` | `"reserve-mem-v1"`                     |
//! | `/<name>` | `start`      | u64 phys, native-endian, 8 bytes       |
//! | `/<name>` | `size`       | u64 bytes, native-endian, 8 bytes      |
//!
//! The regions' pages are preserved with `kho_preserve_pages()` (split into
//! maximal aligned blocks) so the next kernel can reserve them at the same
//! address. As everywhere in KHO, `start` and `size` are the raw bytes of a
//! u64 (`fdt_property(fdt, "start", &map->start, sizeof(map->start))`), not
//! big-endian DT cells.
//!
//! Sources: torvalds/linux@c17ee635fd3a `include/linux/kho/abi/memblock.h`;
//! `mm/memblock.c` (`prepare_kho_fdt()`, `reserve_mem_kho_revive()`).
//!
//! # Validation
//!
//! [`MemblockFdt::parse`] checks the DTB (via `dtoolkit`, at most one page),
//! the root `compatible`, then every region: `compatible`, `start` and
//! `size` present and 8 bytes, the region inside the address space.

// Errors hold their names inline: no_std, no allocation, cold path.
#![allow(clippy::result_large_err)]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use dtoolkit::error::FdtParseError;
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::{Node, Property};

use crate::addr::{PhysAddr, PhysRange};
use crate::fdt::KHO_FDT_MAX_SIZE;
use crate::mem::PageMap;
use crate::name::FdtName;
use crate::phys::{PAGE_BYTES, PhysReader, ReadError};

/// The root FDT subnode memblock registers.
pub const MEMBLOCK_KHO_FDT: &str = "memblock";
/// The blob's root `compatible`.
pub const MEMBLOCK_KHO_NODE_COMPATIBLE: &str = "memblock-v1";
/// A region node's `compatible`.
pub const RESERVE_MEM_KHO_NODE_COMPATIBLE: &str = "reserve-mem-v1";

/// Why a memblock blob was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemblockError {
    /// The blob could not be read.
    #[error("memblock blob {blob}: {source}")]
    Read {
        /// The blob.
        blob: PhysAddr,
        /// Why.
        source: ReadError,
    },
    /// Not a valid DTB.
    #[error("memblock blob: malformed device tree: {0}")]
    Malformed(#[source] FdtParseError),
    /// `totalsize` more than the bytes given or than a page.
    #[error(
        "memblock blob: device tree header says {totalsize} bytes, {len} are given (at most {max})"
    )]
    Size {
        /// `totalsize`.
        totalsize: u32,
        /// Bytes given.
        len: usize,
        /// One page.
        max: usize,
    },
    /// A node's `compatible` is missing or not the expected string.
    #[error("memblock blob: node `{node}` has compatible {found:?}, expected `{expected}`")]
    Compatible {
        /// The node (`/` for the root).
        node: FdtName,
        /// What it has (empty if none).
        found: FdtName,
        /// What it must have.
        expected: &'static str,
    },
    /// A region without `start` or `size`, or one that is not 8 bytes.
    #[error("memblock blob: region `{node}`: property `{property}` is missing or not 8 bytes")]
    Property {
        /// The region.
        node: FdtName,
        /// The property.
        property: &'static str,
    },
    /// A region that runs past the address space.
    #[error("memblock blob: region `{node}` at {start} of {size:#x} bytes overflows")]
    Overflow {
        /// The region.
        node: FdtName,
        /// `start`.
        start: PhysAddr,
        /// `size`.
        size: u64,
    },
}

/// One `reserve_mem` region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveMem<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its bytes.
    pub range: PhysRange,
}

/// A validated memblock blob, borrowing the bytes.
#[derive(Debug, Clone, Copy)]
pub struct MemblockFdt<'a> {
    fdt: Fdt<'a>,
}

fn string_prop(node: &FdtNode<'_>) -> Option<FdtName> {
    let p = node.property("compatible")?;
    let (last, body) = p.value().split_last()?;
    if *last != 0 || body.contains(&0) {
        return None;
    }
    core::str::from_utf8(body).ok().map(FdtName::new)
}

fn compatible_is(node: &FdtNode<'_>, expected: &'static str) -> Result<(), MemblockError> {
    match string_prop(node) {
        Some(found) if found.as_str() == expected && !found.is_truncated() => Ok(()),
        found => Err(MemblockError::Compatible {
            node: FdtName::new(if node.name().is_empty() {
                "/"
            } else {
                node.name()
            }),
            found: found.unwrap_or_else(|| FdtName::new("")),
            expected,
        }),
    }
}

fn u64_prop(node: &FdtNode<'_>, name: &'static str) -> Result<u64, MemblockError> {
    node.property(name)
        .and_then(|p| <[u8; 8]>::try_from(p.value()).ok())
        .map(u64::from_ne_bytes)
        .ok_or(MemblockError::Property {
            node: FdtName::new(node.name()),
            property: name,
        })
}

fn region<'a>(node: &FdtNode<'a>) -> Result<ReserveMem<'a>, MemblockError> {
    let name = node.name();
    compatible_is(node, RESERVE_MEM_KHO_NODE_COMPATIBLE)?;
    let start = PhysAddr::new(u64_prop(node, "start")?);
    let size = u64_prop(node, "size")?;
    let range = PhysRange::from_start_size(start, size).map_err(|_| MemblockError::Overflow {
        node: FdtName::new(name),
        start,
        size,
    })?;
    Ok(ReserveMem { name, range })
}

impl<'a> MemblockFdt<'a> {
    /// Validates `data` (the blob's bytes; past `totalsize` ignored).
    pub fn parse(data: &'a [u8]) -> Result<Self, MemblockError> {
        let total = data
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes);
        let data = match total {
            Some(totalsize) if data.starts_with(&0xd00d_feed_u32.to_be_bytes()) => {
                let size = usize::try_from(totalsize).unwrap_or(usize::MAX);
                match data.get(..size) {
                    Some(d) if size <= KHO_FDT_MAX_SIZE => d,
                    _ => {
                        return Err(MemblockError::Size {
                            totalsize,
                            len: data.len(),
                            max: KHO_FDT_MAX_SIZE,
                        });
                    }
                }
            }
            _ => data,
        };
        let fdt = Fdt::new(data).map_err(MemblockError::Malformed)?;
        let root = fdt.root();
        compatible_is(&root, MEMBLOCK_KHO_NODE_COMPATIBLE)?;
        for node in root.children() {
            region(&node)?;
        }
        Ok(Self { fdt })
    }

    /// Reads the blob at `blob` (`size` bytes, at most a page, in one page)
    /// into `buf` and validates it.
    pub fn read<M: PageMap + ?Sized>(
        reader: PhysReader<'_, '_, M>,
        blob: PhysAddr,
        size: Option<u64>,
        buf: &'a mut [u8; PAGE_BYTES],
    ) -> Result<Self, MemblockError> {
        let len = size
            .and_then(|s| usize::try_from(s).ok())
            .unwrap_or(PAGE_BYTES)
            .min(PAGE_BYTES);
        let bytes = buf.get_mut(..len).unwrap_or_default();
        reader
            .read_bytes(blob, bytes)
            .map_err(|source| MemblockError::Read { blob, source })?;
        Self::parse(bytes)
    }

    /// The regions, in FDT order.
    pub fn regions(&self) -> impl Iterator<Item = ReserveMem<'a>> + 'a {
        // Validated by `parse`: `region` cannot fail here.
        self.fdt.root().children().filter_map(|n| region(&n).ok())
    }
}

#[cfg(feature = "alloc")]
pub use writer::{build_memblock_fdt, write_memblock};

#[cfg(feature = "alloc")]
mod writer {
    use alloc::vec::Vec;

    use vm_fdt::FdtWriter;

    use super::{MEMBLOCK_KHO_NODE_COMPATIBLE, RESERVE_MEM_KHO_NODE_COMPATIBLE};
    use crate::addr::{PAGE_SHIFT, PhysAddr};
    use crate::fdt::{FdtBuildError, KHO_FDT_MAX_SIZE};
    use crate::mem::{PageAlloc, PageMap};
    use crate::name::FdtName;
    use crate::phys::{PageWriter, WriteError};

    fn fdt_err(e: vm_fdt::Error) -> FdtBuildError {
        FdtBuildError::Writer(alloc::format!("{e}"))
    }

    /// The memblock blob for `regions` (name, start, size).
    pub fn build_memblock_fdt(regions: &[(&str, PhysAddr, u64)]) -> Result<Vec<u8>, FdtBuildError> {
        let mut w = FdtWriter::new().map_err(fdt_err)?;
        let root = w.begin_node("").map_err(fdt_err)?;
        w.property_string("compatible", MEMBLOCK_KHO_NODE_COMPATIBLE)
            .map_err(fdt_err)?;
        for (name, start, size) in regions {
            if name.is_empty() {
                return Err(FdtBuildError::InvalidName {
                    name: FdtName::new(name),
                });
            }
            let n = w.begin_node(name).map_err(|_| FdtBuildError::InvalidName {
                name: FdtName::new(name),
            })?;
            w.property_string("compatible", RESERVE_MEM_KHO_NODE_COMPATIBLE)
                .map_err(fdt_err)?;
            w.property("start", &start.as_u64().to_ne_bytes())
                .map_err(fdt_err)?;
            w.property("size", &size.to_ne_bytes()).map_err(fdt_err)?;
            w.end_node(n).map_err(fdt_err)?;
        }
        w.end_node(root).map_err(fdt_err)?;
        let bytes = w.finish().map_err(fdt_err)?;
        if bytes.len() > KHO_FDT_MAX_SIZE {
            return Err(FdtBuildError::TooLarge {
                size: bytes.len(),
                max: KHO_FDT_MAX_SIZE,
            });
        }
        Ok(bytes)
    }

    /// Preserves the regions' pages (as `kho_preserve_pages()`) and writes
    /// the blob in a preserved page; returns the blob's address and size,
    /// for the `memblock` subnode. Regions must be page aligned.
    pub fn write_memblock<M: PageAlloc + PageMap>(
        w: &PageWriter<'_, M>,
        regions: &[(&str, PhysAddr, u64)],
    ) -> Result<(PhysAddr, u64), WriteError> {
        let bytes = build_memblock_fdt(regions).map_err(|_| WriteError::TooLarge {
            what: "memblock FDT",
            len: KHO_FDT_MAX_SIZE,
        })?;
        for (_, start, size) in regions {
            w.tree().preserve_pages(start.pfn(), size >> PAGE_SHIFT)?;
        }
        let phys = w.write_preserved("memblock FDT", &bytes)?;
        Ok((phys, u64::try_from(bytes.len()).unwrap_or(u64::MAX)))
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
