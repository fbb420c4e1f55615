//! KHO serialization blocks (`block-v1`): chains of page-sized blocks, each a
//! header and an array of fixed-size entries.
//!
//! Glossary (Linux names in `code`):
//!
//! | name      | meaning                                                                 |
//! |-----------|-------------------------------------------------------------------------|
//! | block     | one page (`KHO_BLOCK_SIZE = PAGE_SIZE`), preserved at order 0           |
//! | header    | `struct kho_block_header_ser` at the start of every block               |
//! | chain     | blocks linked by `header.next` (physical address, 0 ends the chain)     |
//! | head      | the first block: where the owner's pointer (`sessions_pa`, `files`) points |
//! | entry     | one record after the header; every block of a chain holds one kind      |
//! | capacity  | entries per block: `(4096 - 16) / entry_size`                           |
//!
//! # Layout (one 4096-byte page, little-endian, `__packed`)
//!
//! | offset               | size         | field (Linux)   | meaning                                  |
//! |----------------------|--------------|-----------------|------------------------------------------|
//! | 0                    | 8            | `next` (`u64`)  | phys of the next block, 0 = last         |
//! | 8                    | 8            | `count` (`u64`) | entries in use in this block, `1..=capacity` |
//! | 16 + i * entry_size  | `entry_size` | entry `i`       | the owner's record                       |
//!
//! | owner                      | entry                    | entry size | capacity |
//! |----------------------------|--------------------------|------------|----------|
//! | `luo_ser.sessions_pa`      | `struct luo_session_ser` | 80         | 51       |
//! | `luo_file_set_ser.files`   | `struct luo_file_ser`    | 64         | 63       |
//!
//! How Linux writes a chain (`kernel/liveupdate/kho_block.c`): blocks come
//! from `kho_alloc_preserve(KHO_BLOCK_SIZE)` (zeroed pages preserved at order
//! 0) as the entry count grows, linked at the tail; entries are written in
//! order and each header's `count` follows the writes, so every block but
//! the last is full. An empty set has no block: the owner's pointer is 0.
//!
//! How it reads one back (`kho_block_set_restore()`): Floyd's cycle check
//! over at most `KHO_MAX_BLOCKS = 10000` blocks, then every block must have
//! `0 < count <= capacity`.
//!
//! Sources: torvalds/linux@637315cb400e `include/linux/kho/abi/block.h`,
//! `kernel/liveupdate/kho_block.c`; linux-mm/linux-mm@8c8e79304b06
//! `include/linux/kho/abi/block.h` (adds `KHO_BLOCK_COMPATIBLE "block-v1"`).
//!
//! # Validation
//!
//! [`BlockChain`] checks, for each block before it yields an entry of it, in
//! this order: the pointer is page aligned; the block is RAM and mapped; it
//! is preserved as an order-0 block (when a tracker is given); it closes no
//! cycle (Brent's algorithm: no memory); the chain is not longer than
//! [`KHO_MAX_BLOCKS`]; `count` is not zero and not above the capacity.
//! Errors are [`BlockError`]s naming the block; after one the iterator is
//! fused.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::unwrap_used,
    clippy::panic
)]

use core::fmt;
use core::marker::PhantomData;

use zerocopy::byteorder::little_endian::U64;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::mem::PageMap;
use crate::phys::{PAGE_BYTES, PhysReader, ReadError};
use crate::tracker::{Tracker, Unpreserved, expect_page};

/// The block compatible string (a sub-component of `luo-v5;block-v1`).
pub const KHO_BLOCK_COMPATIBLE: &str = "block-v1";
/// The size of a block: one page.
pub const KHO_BLOCK_SIZE: u64 = PAGE_SIZE;
/// The longest chain Linux accepts.
pub const KHO_MAX_BLOCKS: u64 = 10_000;

/// `struct kho_block_header_ser`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned,
)]
#[repr(C)]
pub struct KhoBlockHeaderSer {
    next: U64,
    count: U64,
}

const _: () = assert!(size_of::<KhoBlockHeaderSer>() == 16);
/// Bytes of the header, where entry 0 starts.
pub const KHO_BLOCK_HEADER_SIZE: usize = size_of::<KhoBlockHeaderSer>();

impl KhoBlockHeaderSer {
    /// A header.
    pub fn new(next: PhysAddr, count: u64) -> Self {
        Self {
            next: U64::new(next.as_u64()),
            count: U64::new(count),
        }
    }

    /// Phys of the next block (zero ends the chain).
    pub fn next(&self) -> PhysAddr {
        PhysAddr::new(self.next.get())
    }

    /// Entries in use in this block.
    pub fn count(&self) -> u64 {
        self.count.get()
    }
}

/// Entries of `entry_size` bytes one block holds.
#[allow(clippy::as_conversions)] // usize -> u64: lossless on the 64-bit targets KHO runs on
pub const fn capacity(entry_size: usize) -> u64 {
    let room = match PAGE_BYTES.checked_sub(KHO_BLOCK_HEADER_SIZE) {
        Some(room) => room,
        None => 0,
    };
    match room.checked_div(entry_size) {
        Some(n) => n as u64,
        None => 0,
    }
}

/// Why a block chain was rejected: the first broken rule, with the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A block pointer that is not page aligned.
    #[error("block pointer {block} is not page aligned")]
    Unaligned {
        /// The pointer.
        block: PhysAddr,
    },
    /// A block that is not RAM or cannot be mapped.
    #[error("block {block} cannot be read: {source}")]
    Read {
        /// The block.
        block: PhysAddr,
        /// Why.
        source: ReadError,
    },
    /// A block the tracker does not hold as an order-0 page.
    #[error("block {block}: {source}")]
    NotPreserved {
        /// The block.
        block: PhysAddr,
        /// How the tracker holds it.
        source: Unpreserved,
    },
    /// The chain comes back to a block it passed.
    #[error("block chain loops back at block {block}")]
    Cycle {
        /// A block on the loop.
        block: PhysAddr,
    },
    /// More blocks than [`KHO_MAX_BLOCKS`].
    #[error("block chain reaches block {block} past the limit of {limit} blocks")]
    TooManyBlocks {
        /// The first block past the limit.
        block: PhysAddr,
        /// The limit.
        limit: u64,
    },
    /// A block whose `count` is zero (Linux never links an empty block).
    #[error("block {block} holds no entry (count 0)")]
    Empty {
        /// The block.
        block: PhysAddr,
    },
    /// A block whose `count` is more than its capacity.
    #[error("block {block} claims {count} entries, its capacity is {capacity}")]
    CountOverflow {
        /// The block.
        block: PhysAddr,
        /// `count`.
        count: u64,
        /// Entries that fit.
        capacity: u64,
    },
}

impl BlockError {
    /// The block the error names.
    pub fn phys(&self) -> PhysAddr {
        match *self {
            Self::Unaligned { block }
            | Self::Read { block, .. }
            | Self::NotPreserved { block, .. }
            | Self::Cycle { block }
            | Self::TooManyBlocks { block, .. }
            | Self::Empty { block }
            | Self::CountOverflow { block, .. } => block,
        }
    }
}

/// Brent's cycle detection over a chain of addresses: no memory, finds a
/// loop within a few trips around it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Brent {
    tortoise: Option<PhysAddr>,
    power: u64,
    steps: u64,
}

impl Brent {
    pub(crate) const fn new() -> Self {
        Self {
            tortoise: None,
            power: 1,
            steps: 0,
        }
    }

    /// Records a visit; `true` if `at` closes a cycle.
    pub(crate) fn visit(&mut self, at: PhysAddr) -> bool {
        if self.tortoise == Some(at) {
            return true;
        }
        self.steps = self.steps.saturating_add(1);
        if self.steps == self.power {
            self.tortoise = Some(at);
            self.power = self.power.saturating_mul(2);
            self.steps = 0;
        }
        false
    }
}

/// One entry of a chain, with where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry<T> {
    /// The block that holds it.
    pub block: PhysAddr,
    /// Its index in that block.
    pub slot: u64,
    /// Its index in the whole chain.
    pub index: u64,
    /// Its physical address.
    pub phys: PhysAddr,
    /// The entry.
    pub value: T,
}

/// The entries of a block chain, in order; see the module doc for what is
/// checked.
pub struct BlockChain<'a, M: ?Sized, T> {
    reader: PhysReader<'a, 'a, M>,
    tracker: Tracker<'a>,
    next: PhysAddr,
    /// The current block, its count and the next slot.
    current: Option<(PhysAddr, u64, u64)>,
    index: u64,
    blocks: u64,
    brent: Brent,
    done: bool,
    _entry: PhantomData<fn() -> T>,
}

impl<M: ?Sized, T> fmt::Debug for BlockChain<'_, M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockChain")
            .field("next", &self.next)
            .field("current", &self.current)
            .field("index", &self.index)
            .field("blocks", &self.blocks)
            .finish()
    }
}

impl<'a, M, T> BlockChain<'a, M, T>
where
    M: PageMap + ?Sized,
    T: FromBytes + IntoBytes + FromZeros,
{
    /// The entries of the chain whose head is `head` (0: an empty chain).
    pub fn new(reader: PhysReader<'a, 'a, M>, tracker: Tracker<'a>, head: PhysAddr) -> Self {
        Self {
            reader,
            tracker,
            next: head,
            current: None,
            index: 0,
            blocks: 0,
            brent: Brent::new(),
            done: false,
            _entry: PhantomData,
        }
    }

    /// Entries per block for `T`.
    pub const CAPACITY: u64 = capacity(size_of::<T>());

    /// Blocks entered so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    fn enter(&mut self, block: PhysAddr) -> Result<(PhysAddr, u64, u64), BlockError> {
        if !block.is_page_aligned() {
            return Err(BlockError::Unaligned { block });
        }
        let header: KhoBlockHeaderSer = self
            .reader
            .read(block)
            .map_err(|source| BlockError::Read { block, source })?;
        expect_page(self.tracker, block)
            .map_err(|source| BlockError::NotPreserved { block, source })?;
        if self.brent.visit(block) {
            return Err(BlockError::Cycle { block });
        }
        if self.blocks >= KHO_MAX_BLOCKS {
            return Err(BlockError::TooManyBlocks {
                block,
                limit: KHO_MAX_BLOCKS,
            });
        }
        self.blocks = self.blocks.saturating_add(1);
        let count = header.count();
        if count == 0 {
            return Err(BlockError::Empty { block });
        }
        if count > Self::CAPACITY {
            return Err(BlockError::CountOverflow {
                block,
                count,
                capacity: Self::CAPACITY,
            });
        }
        self.next = header.next();
        Ok((block, count, 0))
    }

    fn step(&mut self) -> Option<Result<BlockEntry<T>, BlockError>> {
        let (block, count, slot) = match self.current {
            Some((block, count, slot)) if slot < count => (block, count, slot),
            _ => {
                if self.next == PhysAddr::ZERO {
                    return None;
                }
                let next = self.next;
                match self.enter(next) {
                    Ok(c) => c,
                    Err(e) => return Some(Err(e)),
                }
            }
        };
        let size = u64::try_from(size_of::<T>()).unwrap_or(u64::MAX);
        let offset = slot
            .checked_mul(size)
            .and_then(|o| o.checked_add(u64::try_from(KHO_BLOCK_HEADER_SIZE).ok()?));
        let Some(phys) = offset.and_then(|o| block.checked_add(o)) else {
            return Some(Err(BlockError::CountOverflow {
                block,
                count,
                capacity: Self::CAPACITY,
            }));
        };
        let value = match self.reader.read::<T>(phys) {
            Ok(v) => v,
            Err(source) => return Some(Err(BlockError::Read { block, source })),
        };
        let entry = BlockEntry {
            block,
            slot,
            index: self.index,
            phys,
            value,
        };
        self.index = self.index.saturating_add(1);
        self.current = Some((block, count, slot.saturating_add(1)));
        Some(Ok(entry))
    }
}

impl<M, T> Iterator for BlockChain<'_, M, T>
where
    M: PageMap + ?Sized,
    T: FromBytes + IntoBytes + FromZeros,
{
    type Item = Result<BlockEntry<T>, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl<M, T> core::iter::FusedIterator for BlockChain<'_, M, T>
where
    M: PageMap + ?Sized,
    T: FromBytes + IntoBytes + FromZeros,
{
}

#[cfg(feature = "alloc")]
pub use writer::write_chain;

#[cfg(feature = "alloc")]
mod writer {
    use alloc::vec::Vec;

    use zerocopy::{Immutable, IntoBytes};

    use super::{KHO_BLOCK_HEADER_SIZE, KHO_MAX_BLOCKS, KhoBlockHeaderSer, capacity};
    use crate::addr::PhysAddr;
    use crate::mem::{PageAlloc, PageMap};
    use crate::phys::{PageWriter, WriteError};

    /// Writes `entries` as a chain of preserved blocks, as Linux's block set
    /// does: every block full but the last, linked in order. Returns the
    /// head (0 for no entries) and the blocks.
    pub fn write_chain<M, T>(
        w: &PageWriter<'_, M>,
        what: &'static str,
        entries: &[T],
    ) -> Result<(PhysAddr, Vec<PhysAddr>), WriteError>
    where
        M: PageAlloc + PageMap,
        T: IntoBytes + Immutable,
    {
        let cap = usize::try_from(capacity(size_of::<T>())).unwrap_or(0);
        if cap == 0 {
            return Err(WriteError::TooLarge {
                what,
                len: size_of::<T>(),
            });
        }
        let chunks: Vec<&[T]> = entries.chunks(cap).collect();
        let count = u64::try_from(chunks.len()).unwrap_or(u64::MAX);
        if count > KHO_MAX_BLOCKS {
            return Err(WriteError::TooMany {
                what,
                count: u64::try_from(entries.len()).unwrap_or(u64::MAX),
                max: KHO_MAX_BLOCKS.saturating_mul(capacity(size_of::<T>())),
            });
        }
        let mut blocks = Vec::with_capacity(chunks.len());
        for _ in &chunks {
            blocks.push(w.alloc_preserved()?);
        }
        for (i, (chunk, &block)) in chunks.iter().zip(&blocks).enumerate() {
            let next = blocks
                .get(i.saturating_add(1))
                .copied()
                .unwrap_or(PhysAddr::ZERO);
            let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            w.write(block, 0, KhoBlockHeaderSer::new(next, n).as_bytes())?;
            w.write(block, KHO_BLOCK_HEADER_SIZE, chunk.as_bytes())?;
        }
        Ok((blocks.first().copied().unwrap_or(PhysAddr::ZERO), blocks))
    }
}

#[cfg(all(test, feature = "alloc"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::panic,
    clippy::as_conversions
)]
mod tests;
